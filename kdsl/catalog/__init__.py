"""The catalog: torch-free declarations of every component (signatures, value constraints, shape
rules, documentation) and the registry that holds them. Implementations live in
:mod:`kdsl.components`, in modules of the same names."""
