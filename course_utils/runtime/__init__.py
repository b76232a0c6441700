"""Plumbing every part of the course relies on; nothing here is course content.

    paths       where the course keeps things (caches inside the repo), the notebook execution environment
    netguard    offline made provable: non-local connections raise at once
    manifest    SHA-256 checksums of the embedded model and data
    bnb_guard   guards against two bitsandbytes CPU bugs that break QLoRA (installed on import)
    switches    on/off environment switches, parsed one way
    doctor      `python -m course_utils doctor`: is this machine ready?
"""
