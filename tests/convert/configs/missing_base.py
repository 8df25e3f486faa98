# the base named below does not exist
_base_ = ['./schedule_base.py',
          './no_such_base.py']
