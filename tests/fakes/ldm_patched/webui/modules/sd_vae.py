"""Fake of ``modules/sd_vae.py`` (reForge 3b56b268 :267-301, Forge Classic 1f95d717): the external-VAE
globals. ``loaded_vae_file`` is the external file's path or None; reForge's ``load_vae`` of an
external file **rebuilds** ``forge_objects.vae`` (new ``VAE``, new ``first_stage_model``) and points
``sd_model.first_stage_model`` at it (the fake handle's ``use_external_vae`` does that)."""

base_vae = None
loaded_vae_file = None
checkpoint_info = None


def reload_vae_weights(sd_model=None, vae_file=None):
    return sd_model


def delete_base_vae():
    global base_vae
    base_vae = None


def clear_loaded_vae():
    global loaded_vae_file
    loaded_vae_file = None
