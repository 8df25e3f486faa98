model = dict(
    type='mmrazor.NotAnAlgorithm',
    architecture=dict(type='kdsl.zoo:resnet8x4'))
