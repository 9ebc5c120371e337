"""Our own small builders of the zoo's architectures, laid out so that the state_dicts torchvision saves load key
for key (torchvision and timm do not import with the CPU torch wheel we pin). Imported only through a card's dotted
``architecture.builder``: these modules import torch.
"""
