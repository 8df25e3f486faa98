"""python -m kdsl"""
from kdsl.cli.app import main

main()
