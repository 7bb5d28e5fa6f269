"""tfcell models: backbones (VGG19, ResNet-50, the IDC AlexNet, CCT, a small CPU CNN) and the
classifier builder that puts an embedding and a softmax, affinity or cosine head
on any of them."""

from tfcell.models.aecfe import *
from tfcell.models.backbones import *
from tfcell.models.classifier import *
from tfcell.models.detector import *
from tfcell.models.saving import *
from tfcell.models.unet import *
