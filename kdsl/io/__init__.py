"""What a spec or a flag names outside it, read defensively: checkpoint files, model weights
(always ``weights_only``), and models given on the command line (``--student``, ``--model``,
``--teacher-ckpt``)."""
