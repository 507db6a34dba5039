"""`runas-agent doctor`: every link of the Run As chain, checked from the instance, each reported ok /
warning / failed / skipped with the remedy. It reads the config, AWS (read-only calls), the directory and
the host, and changes nothing.

The chain, in the order it is shown (`chain.py`):

    config -> credentials -> the source type's probes (for the Identity Store: botocore, identitystore,
    identitystore-fields) -> Identity Center ABAC -> Session Manager preferences -> the session documents
    that bypass Run As -> identities -> allowed names -> accounts -> SSM agent -> sudoers tree -> ssm-user's
    blanket sudo -> last sync

The package:

    check.py            the declaration API: a check is a small class naming the facts it needs, uses
                        and provides; what it returns (Verdict) and what the report shows (Result)
    facts.py            the facts checks hand each other (the config, the credentials, the directory...)
    runner.py           runs the checks in dependency order; derives every "skipped because X"
    env.py              what the checks read the world through (the host probe, the AWS session)
    chain.py            the checks in display order, and `Doctor`, which runs them
    sync.py             the sync's own links: config, identities, accounts, last sync
    aws.py              credentials, Identity Center ABAC
    session_manager.py  the Session Manager preferences (and the region they are read in), the session
                        documents that bypass Run As
    host.py             the SSM agent, the sudoers tree, ssm-user's blanket sudo
    names.py            accounts.allowed_names: set, and matched by the names the directory maps to
    cli.py              the command, its text and JSON output and exit status

A source type's own probes live on its class (`Source.probes`, e.g. `sources/identitystore.py`).

This module imports nothing, so that a source type can import the declaration API (`check`, `facts`)
without loading the checks that import the source types.
"""
