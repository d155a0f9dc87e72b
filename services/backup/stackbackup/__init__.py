"""stack-backup: the backup engine of the aiida-stack sidecar (backup, list, verify, prune, restore primitives).

Runs inside the backup image as the backup user (uid 1000). Every command prints ONE JSON line on
stdout as its result; progress goes to stderr. Exit codes: 0 ok, 1 failure, 2 bad input (unknown
profile / backup id, refused target), 3 lock busy.

Layout of /backups (the backups volume, 0700):

    /backups/.lock                       flock: one backup (or prune) at a time
    /backups/.schedule.json              the sidecar's schedule: last run, its result per profile, next due
    /backups/<profile>/.live-<rand>/     a backup in progress (never listed; removed if stale)
    /backups/<profile>/backup_<UTC ts>_<rand>/
        database/                        pg_dump --format=directory (pg_restore -j loads it in parallel)
        repository/container/            disk-objectstore container, unchanged files hard-linked
                                         (rsync --link-dest) to the previous backup
        repository-hashes.txt            sorted object hashes of the copied container, one a line
        config.json                      the profile's config.json entry alone (0600)
        manifest.json                    what is in it, checksums of the dump, counts, sizes, times
        verify.json                      the last verification's result (after `verify`)
        .reading                         readers (verify, restore) hold a shared flock on it
    /backups/<profile>/latest -> backup_...   moved last, atomically
    /backups/<profile>/.read-share.json  which 1/N share of the older backups `read-share` reads next

The runbook behind `backup` (AiiDA's `verdi storage backup`, extended): lock → dump database →
copy repository → write config entry → write manifest → publish → prune. Database first,
repository after: objects are immutable and append-only, so a repository copied after the dump
holds every object the dump references.

Modules:
    common        Fail and exit codes, progress on stderr, runbook steps, running tools, small helpers
    layout        paths and names under /backups, published backups, locks, atomic JSON writes
    aiida_config  the AiiDA side: config.json, a profile's database name and repository folder
    manifest      the manifest: reading it, building it, disk usage of a backup
    database      PostgreSQL: connections, the dump, `restore-database`
    repository    disk-objectstore: consistent container copy, object hashes, `restore-repository`
    backup        `backup`: the runbook from lock to publish
    retention     tiered retention arithmetic (keep last/daily/weekly/monthly), pure
    prune         removing old backups: `backup --keep N`, and `prune` by tiers (never `latest`, the
                  newest verified backup, or one being read)
    schedule      the sidecar's schedule: BACKUP_* settings, due times, .schedule.json, the health
                  rule, `schedule-status` (the loop itself: services/backup/sidecar.py serve)
    verify        `verify`: checksums, repository, optionally a real restore on a scratch server
    rot           re-copying a new backup's rotten loose objects from the live repository
    readshare     `read-share`: the next 1/N of the older backups' files, read and checked
    swap          a restore's renames of database and repository folder: in, back, drop
    locking       the stack's one lock (flock + holder record), `hold-lock` for the host
    cli           argparse, the one JSON result line, exit codes: main()

Run as `python -m stackbackup` (the image's /usr/local/bin/stack-backup does).
"""
