"""Training, without Ray: the loss module, optimizer, schedule and epoch loop (``loop``),
InfoNCE negatives across ranks (``distributed``), and frozen encoder layers encoded once
(``frozen_features``). ``ray_jobs.train`` runs them on Ray Train workers."""
