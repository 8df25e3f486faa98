# A logits-KD config in MMRazor's format, written for kdsl's converter tests.
_base_ = ['./schedule_base.py']

teacher_ckpt = 'checkpoints/resnet32x4.pth'
tau = 2 * 2

model = dict(
    _scope_='mmrazor',
    type='SingleTeacherDistill',
    architecture=dict(cfg_path='mmcls::cifar/resnet8x4_cifar100.py', pretrained=False),
    teacher=dict(cfg_path='mmcls::cifar/resnet32x4_cifar100.py', pretrained=True),
    teacher_ckpt=teacher_ckpt,
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(fc=dict(type='ModuleOutputs', source='head.fc')),
        teacher_recorders=dict(fc=dict(type='ModuleOutputs', source='head.fc')),
        distill_losses=dict(loss_kl=dict(type='KLDivergence', tau=tau, loss_weight=5)),
        loss_forward_mappings=dict(
            loss_kl=dict(
                preds_S=dict(from_student=True, recorder='fc'),
                preds_T=dict(from_student=False, recorder='fc')))))

optim_wrapper = dict(optimizer=dict(lr={{_base_.base_lr}} * 2))
