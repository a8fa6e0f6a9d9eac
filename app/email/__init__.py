"""Email touchpoints: signed open-pixel and click-redirect tokens, machine-activity flags."""
