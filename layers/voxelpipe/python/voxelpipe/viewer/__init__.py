"""The web viewer: NiiVue pages that show a study's volume and label maps (docs/viewer.md)."""
