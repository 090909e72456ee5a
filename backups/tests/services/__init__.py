"""Tests of the services (backups/services/): backup, restore, selective restore, clone,
recover, offboard, legal hold, uploads."""
