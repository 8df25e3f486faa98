# A data-free config in MMRazor's format with an iteration-based loop and per-optimizer
# schedules, written for kdsl's converter tests.
steps = 40

model = dict(
    type='DataFreeDistillation',
    architecture=dict(type='kdsl.zoo:wrn_16_2'),
    teachers=dict(wrn=dict(build_cfg=dict(type='kdsl.zoo:wrn_40_2'), ckpt_path='wrn.pth')),
    generator=dict(type='ZSKTGenerator', img_size=32, latent_dim=128),
    distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(
            g2=dict(type='ModuleOutputs', source='block2'),
            logits=dict(type='ModuleOutputs', source='fc')),
        teacher_recorders=dict(
            wrn_g2=dict(type='ModuleOutputs', source='wrn.block2'),
            wrn_logits=dict(type='ModuleOutputs', source='wrn.fc')),
        distill_losses=dict(
            loss_at=dict(type='ATLoss', loss_weight=250.0),
            loss_kl=dict(type='KLDivergence', loss_weight=2.0, reduction='mean')),
        loss_forward_mappings=dict(
            loss_at=dict(
                s_feature=dict(from_student=True, recorder='g2', record_idx=1),
                t_feature=dict(from_student=False, recorder='wrn_g2', record_idx=1)),
            loss_kl=dict(
                preds_S=dict(from_student=True, recorder='logits'),
                preds_T=dict(from_student=False, recorder='wrn_logits')))),
    generator_distiller=dict(
        type='ConfigurableDistiller',
        student_recorders=dict(logits=dict(type='ModuleOutputs', source='fc')),
        teacher_recorders=dict(wrn_logits=dict(type='ModuleOutputs', source='wrn.fc')),
        distill_losses=dict(
            loss_adv=dict(type='KLDivergence', loss_weight=-2.0, reduction='mean',
                          teacher_detach=False)),
        loss_forward_mappings=dict(
            loss_adv=dict(
                preds_S=dict(from_student=True, recorder='logits'),
                preds_T=dict(from_student=False, recorder='wrn_logits')))),
    student_iter=5)

optim_wrapper = dict(
    constructor='mmrazor.SeparateOptimWrapperConstructor',
    architecture=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4)),
    generator=dict(optimizer=dict(type='Adam', lr=1e-3)))

param_scheduler = dict(
    architecture=dict(type='MultiStepLR', milestones=[30 * steps, 60 * steps], by_epoch=False),
    generator=dict(type='MultiStepLR', milestones=[30 * steps, 60 * steps], by_epoch=False))

train_cfg = dict(by_epoch=False, max_iters=90 * steps, val_interval=steps)
train_dataloader = dict(batch_size=128)
