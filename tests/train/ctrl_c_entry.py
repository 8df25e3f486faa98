"""Entry of a `kdsl` child of tests/forked.py that Ctrl-C interrupts as it does ``python -m kdsl``:
SIGINT raises KeyboardInterrupt. A child keeps the SIGINT handling its fork server's interpreter
started with, which is "ignored" where pytest runs as a shell's background job (that job's
children inherit the ignoring, and an interpreter started so keeps it)."""

import signal

signal.signal(signal.SIGINT, signal.default_int_handler)
