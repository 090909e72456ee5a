"""Fixtures for the storage tests."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from backups.tests.helpers import BUCKET, s3_config, use_backups_storage

# --- S3 (moto in-process) -----------------------------------------------------------


@pytest.fixture
def s3(settings):
    """The backups storage on a moto S3 bucket (in-process), created empty."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
        client.create_bucket(Bucket=BUCKET)
        use_backups_storage(settings, s3_config())
        yield client
