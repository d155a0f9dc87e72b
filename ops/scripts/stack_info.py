"""Runs inside the aiida container (plain python): the installation's state as one JSON line.

It loads the default profile but never its storage, so it answers for a profile whose storage needs
`./stack migrate` too (processes and schemas come from `aiida-stack-profile activity`)."""

import json
from importlib.metadata import distributions

import aiida
from aiida.manage.configuration import get_config, load_profile

profile = load_profile()
config = get_config()
# plugins: installed distributions (other than aiida-core) that register AiiDA entry points
plugins = sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()
                  if d.metadata["Name"].lower() != "aiida-core"
                  and any(ep.group.startswith("aiida.") for ep in d.entry_points)})
print(json.dumps({
    "plugins": plugins,
    "aiida_core": aiida.__version__,
    "profile": profile.name,
    "default_profile": config.default_profile_name,
    "profiles": sorted(config.profile_names),
}))
