"""The one place that knows the stack's service, volume and secret names."""

POSTGRES = "postgres"
RABBITMQ = "rabbitmq"
AIIDA = "aiida"
BACKUP = "backup"
SERVICES = (POSTGRES, RABBITMQ, AIIDA, BACKUP)

# Named volumes as in compose.yaml. Backups are never removed by `down --volumes`.
AIIDA_HOME_VOLUME = "aiida-home"
HANDOFF_VOLUME = "handoff"  # the sidecar's requests to the aiida service (stack_rules.HANDOFF_DIR)
DATA_VOLUMES = ("postgres-data", "rabbitmq-data", AIIDA_HOME_VOLUME, HANDOFF_VOLUME)
BACKUP_VOLUMES = ("backups",)

# Secret files generated on first `up` (ops/secrets.py), one per credential.
SECRETS = ("postgres_password", "aiida_db_password", "rabbitmq_password", "backup_db_password")

AIIDA_USER = "aiida"
BACKUP_USER = "stack-backup"
AIIDA_HOME_IN_AIIDA = "/home/aiida/.aiida"  # the aiida-home volume: here in the aiida service...
AIIDA_HOME_IN_BACKUP = "/aiida-home"  # ...and here (read-only) in the backup sidecar
AIIDA_HOME_RW_IN_BACKUP = "/aiida-home-rw"  # ...and here, read-write, in a one-off sidecar (restores)

BACKUP_ENGINE = "stack-backup"  # the backup sidecar's engine CLI (services/backup/stack-backup)
