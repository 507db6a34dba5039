"""runas-agent: SSM Session Manager Run As accounts from the IAM Identity Center directory."""

__version__ = "0.1.0"
