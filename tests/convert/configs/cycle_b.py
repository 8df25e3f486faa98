y = 2
_base_ = ['./cycle_a.py']
