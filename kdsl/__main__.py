"""python -m kdsl"""
from kdsl.cli.entry import main

main()
