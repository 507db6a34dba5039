"""A local Identity Store endpoint for tests, demos and benchmarks: moto's server extended with
UserStatus and Extensions, fault injection, call counters and a check of its responses against
botocore's service model. Run it with `python -m tests.endpoint --port N [--seed FILE]`."""
