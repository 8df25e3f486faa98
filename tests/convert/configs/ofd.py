# An OFD config in MMRazor's format (margins from the teacher's BatchNorms, a student-side
# ConvModule connector), written for kdsl's converter tests.
model = dict(
    type='OverhaulFeatureDistillation',
    architecture=dict(cfg_path='mmrazor::vanilla/mmcls/wide-resnet/wrn16_2_b16x8_cifar10.py'),
    teacher=dict(cfg_path='mmrazor::vanilla/mmcls/wide-resnet/wrn40_2_b16x8_cifar10.py'),
    teacher_ckpt='wrn40_2.pth',
    calculate_student_loss=False,
    student_trainable=False,
    distiller=dict(
        type='OFDDistiller',
        student_recorders=dict(pre=dict(type='ModuleOutputs', source='block3.bn')),
        teacher_recorders=dict(pre=dict(type='ModuleOutputs', source='block3.bn')),
        distill_losses=dict(loss_ofd=dict(type='OFDLoss', loss_weight=0.5)),
        connectors=dict(
            s_adapt=dict(type='ConvModuleConncetor', in_channel=128, out_channel=128,
                         norm_cfg=dict(type='BN'), act_cfg=None),
            t_margin=dict(type='OFDTeacherConnector')),
        loss_forward_mappings=dict(loss_ofd=dict(
            s_feature=dict(from_student=True, recorder='pre', connector='s_adapt'),
            t_feature=dict(from_student=False, recorder='pre', connector='t_margin')))))
