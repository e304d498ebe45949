"""Networks and their weights: DCE-Net, ESPNet, VGG16, the named-weights hub and external assets."""
