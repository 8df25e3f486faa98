"""What ``kdsl check``, ``kdsl explain`` and ``kdsl graph`` show of a spec compiled against
models: tables, words and graphs drawn from the compiler's plan (the passes stay in
:mod:`kdsl.compiler`)."""
