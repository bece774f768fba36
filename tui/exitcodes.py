"""Exit codes of `sfops`, one meaning each (documented in README.md)."""

OK = 0  # healthy / action succeeded
DEGRADED = 1  # status: something is unhealthy; action: failed during execute or verify
USAGE = 2  # bad flags or configuration (the message names the file and key)
REFUSED = 3  # an action's preflight failed (nothing was changed), or it was not confirmed
READ_ONLY = 4  # a mutating command in read-only mode (refused before any request)
UNREACHABLE = 5  # the backend could not be reached at all
INTERRUPTED = 130  # Ctrl-C
BROKEN_PIPE = 141  # the reader of our output went away (`| head`): 128 + SIGPIPE, as a shell
