import boto3
import pytest

from tests.deploy import aws


@pytest.fixture
def session(identitystore_endpoint):
    """A boto3 session for the local endpoint, whose moto forgets every deployment before and after
    the test (modules using it register tests.endpoint.fixtures)."""
    aws.reset_moto()
    yield boto3.session.Session(region_name=identitystore_endpoint.region)
    aws.reset_moto()
