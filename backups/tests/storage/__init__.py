"""Tests of the backup storage (local folder and S3) and of the clinics' media files."""
