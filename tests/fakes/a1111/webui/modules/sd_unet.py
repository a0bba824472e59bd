"""Fake of ``modules/sd_unet.py`` (A1111 v1.10.1, 82a973c0): no custom UNet is ever available."""

current_unet = None
current_unet_option = None


def apply_unet(option=None):
    global current_unet, current_unet_option
    from modules import shared

    option = shared.opts.sd_unet if option is None else option
    if option == "None":
        current_unet, current_unet_option = None, None
