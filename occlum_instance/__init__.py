"""Occlum LibOS appliances: Occlum.json templates, copy_bom files, the build
script, the sizing rule (sizing.py), the renderer (render.py) and the static
checks (checks.py). Nothing here is imported by the runtime packages; it may
import `sesemi` but never `app` or `keyservice`."""
