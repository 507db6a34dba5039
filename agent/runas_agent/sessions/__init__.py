"""Session attribution: every Session Manager session on the host, recorded with the real Identity
Center person behind it (watcher.SessionWatcher; model is the pure part).

The package itself imports nothing: the watcher is loaded by the service that runs it (and by the
`sessions` commands), never by the one-shot sync.
"""
