# The README's MMRazor example: KD from ResNet32x4 into ResNet8x4 on CIFAR-100.
_base_ = ['mmcls::_base_/datasets/cifar100_bs16.py']

model = dict(
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    architecture=dict(cfg_path='mmcls::cifar/resnet8x4_cifar100.py'),
    teacher=dict(cfg_path='mmcls::cifar/resnet32x4_cifar100.py'),
    teacher_ckpt='checkpoints/resnet32x4.pth',
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(fc=dict(type='ModuleOutputs', source='fc')),
        teacher_recorders=dict(fc=dict(type='ModuleOutputs', source='fc')),
        distill_losses=dict(loss_kl=dict(type='KLDivergence', tau=4, loss_weight=0.9)),
        loss_forward_mappings=dict(loss_kl=dict(
            preds_S=dict(from_student=True, recorder='fc'),
            preds_T=dict(from_student=False, recorder='fc')))))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[150, 180, 210], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=240)
