"""The rules shared with the services (profile names, backup ids, the schedule), from their one definition.

services/common/stack_rules.py is copied into the images; the host loads the same file here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_COMMON = Path(__file__).resolve().parent.parent / "services" / "common"


def load_common(name: str):
    """services/common/<name>.py, the file the images copy, as the module `name`."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _COMMON / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_rules = load_common("stack_rules")
PROFILE_PATTERN: str = _rules.PROFILE_PATTERN
PROFILE_RE = _rules.PROFILE_RE
BACKUP_ID_RE = _rules.BACKUP_ID_RE
LATEST: str = _rules.LATEST
database_name = _rules.database_name
daemon_stop_marker = _rules.daemon_stop_marker
profile_problem = _rules.profile_problem
backup_id_problem = _rules.backup_id_problem
parse_schedule = _rules.parse_schedule
SCHEDULE_HELP: str = _rules.SCHEDULE_HELP
parse_read_share = _rules.parse_read_share
restore_names = _rules.restore_names
MAINTENANCE_SWITCH: tuple[str, str] = _rules.MAINTENANCE_SWITCH
HANDOFF_DIR: str = _rules.HANDOFF_DIR
parse_offsite = _rules.parse_offsite
OFFSITE_HELP: str = _rules.OFFSITE_HELP
parse_offsite_interval = _rules.parse_offsite_interval
parse_recipients = _rules.parse_recipients
