"""reconciler: backups as YAML in git, kept running by a daemon on the backup host."""
