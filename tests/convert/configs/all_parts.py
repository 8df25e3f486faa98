# Every ConfigurableDistiller part in MMRazor's format, written for kdsl's converter tests.
model = dict(
    type='mmrazor.SingleTeacherDistill',
    architecture=dict(type='kdsl.zoo:resnet8x4'),
    teacher=dict(type='kdsl.zoo:resnet32x4'),
    teacher_ckpt='t.pth',
    calculate_student_loss=False,
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(
            feat=dict(type='ModuleOutputs', source='layer3'),
            pre=dict(type='ModuleInputs', source='layer3.0.relu'),
            head=dict(type='MethodOutputs', source='kdsl.zoo.resnet.ResNet.forward'),
            head_in=dict(type='MethodInputs', source='kdsl.zoo.resnet.ResNet.forward'),
            fn=dict(type='FunctionOutputs', source='torch.nn.functional.relu'),
            fn_in=dict(type='FunctionInputs', source='torch.nn.functional.relu'),
            w=dict(type='Parameter', source='conv1.weight')),
        teacher_recorders=dict(feat=dict(type='ModuleOutputs', source='layer3')),
        distill_deliveries=[
            dict(type='MethodOutputs', max_keep_data=1, method_path='kdsl.zoo.resnet.ResNet.forward')],
        connectors=dict(
            align=dict(type='ConvModuleConnector', in_channel=256, out_channel=256,
                       norm_cfg=dict(type='BN'), act_cfg=None)),
        distill_losses=dict(
            loss_at=dict(type='ATLoss', loss_weight=1000),
            loss_l2=dict(type='L2Loss', normalize=False),
            loss_ab=dict(type='ABLoss', margin=0.5),
            loss_l1=dict(type='L1Loss')),
        loss_forward_mappings=dict(
            loss_at=dict(
                s_feature=dict(from_student=True, recorder='feat', connector='align'),
                t_feature=dict(from_student=False, recorder='feat')),
            loss_l2=dict(
                s_feature=dict(from_student=True, recorder='pre', data_idx=0, record_idx=1),
                t_feature=dict(from_student=True, recorder='head', data_idx=1)),
            loss_ab=dict(
                s_feature=dict(from_student=True, recorder='fn'),
                t_feature=dict(from_student=True, recorder='fn_in', data_idx=0)),
            loss_l1=dict(
                s_feature=dict(from_student=True, recorder='head_in', data_idx=0),
                t_feature=dict(from_student=True, recorder='w')))))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))
train_cfg = dict(by_epoch=True, max_epochs=10)
