model = dict(
    type='SingleTeacherDistill',,
)
