# A data-free (DAFL) config in MMRazor's format, written for kdsl's converter tests.
model = dict(
    type='mmrazor.DAFLDataFreeDistillation',
    architecture=dict(type='kdsl.zoo:resnet8x4'),
    teachers=dict(res32=dict(build_cfg=dict(type='kdsl.zoo:resnet32x4'), ckpt_path='t.pth')),
    generator=dict(type='DAFLGenerator', img_size=32, latent_dim=256, hidden_channels=128),
    student_iter=5,
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(fc=dict(type='ModuleOutputs', source='fc')),
        teacher_recorders=dict(res32_fc=dict(type='ModuleOutputs', source='res32.fc')),
        distill_losses=dict(loss_kl=dict(type='KLDivergence', tau=6, loss_weight=1)),
        loss_forward_mappings=dict(loss_kl=dict(
            preds_S=dict(from_student=True, recorder='fc'),
            preds_T=dict(from_student=False, recorder='res32_fc')))),
    generator_distiller=dict(
        type='ConfigurableDistiller',
        teacher_recorders=dict(res32_fc=dict(type='ModuleOutputs', source='res32.fc')),
        distill_losses=dict(loss_oh=dict(type='OnehotLikeLoss', loss_weight=0.05)),
        loss_forward_mappings=dict(loss_oh=dict(
            preds_T=dict(from_student=False, recorder='res32_fc')))))
optim_wrapper = dict(
    architecture=dict(optimizer=dict(type='AdamW', lr=0.1)),
    generator=dict(optimizer=dict(type='Adam', lr=0.001)))
train_cfg = dict(type="IterBasedTrainLoop", max_iters=2000)
