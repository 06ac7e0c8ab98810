"""One optimisation step of a model's auxiliary stage or main stage, as the trainer takes them.

Shared by the model tests that check each stage updates exactly its own parameters.
"""

import torch


def main_optimizer(model):
    return torch.optim.Adam(model.parameter_groups(model.config["train"]))


def main_parameter_names(model):
    """Names of the parameters the main optimiser updates (the model's ``parameter_groups``)."""
    main_ids = {id(p) for group in model.parameter_groups(model.config["train"]) for p in group["params"]}
    return {name for name, p in model.named_parameters() if id(p) in main_ids}


def take_stage_step(model, batch):
    """A step of the model's (first) auxiliary stage; returns its loss."""
    stage = model.auxiliary_stages()[0]
    optimizer = torch.optim.Adam(stage.parameters, lr=stage.lr)
    optimizer.zero_grad()
    loss = stage.loss(batch)
    loss.backward()
    optimizer.step()
    return loss


def take_main_step(model, batch, optimizer=None):
    """A main-stage step; returns the loss and the logged terms."""
    optimizer = optimizer or main_optimizer(model)
    model.zero_grad(set_to_none=True)
    loss, terms = model.training_loss(batch)
    loss.backward()
    optimizer.step()
    return loss, terms


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed_since(model, before):
    return {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
