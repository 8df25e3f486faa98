"""python -m kdsl"""
from .cli import main

main()
