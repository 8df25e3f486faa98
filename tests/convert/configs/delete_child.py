_base_ = 'schedule_base.py'
model = dict(
    type='SingleTeacherDistill',
    architecture=dict(type='kdsl.zoo:resnet8x4'),
    teacher=dict(type='kdsl.zoo:resnet32x4'),
    calculate_student_loss=False,
    distiller=dict(
        student_recorders=dict(fc=dict(type='ModuleOutputs', source='fc')),
        teacher_recorders=dict(fc=dict(type='ModuleOutputs', source='fc')),
        distill_losses=dict(loss_kl=dict(type='KLDivergence', tau=4)),
        loss_forward_mappings=dict(loss_kl=dict(
            preds_S=dict(from_student=True, recorder='fc'),
            preds_T=dict(from_student=False, recorder='fc')))))
optim_wrapper = dict(optimizer=dict(_delete_=True, type='Adam', lr=0.001))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5),
    dict(type='CosineAnnealingLR', T_max=240, eta_min=1e-5, by_epoch=True, begin=5, end=240),
]
