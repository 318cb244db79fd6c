"""Files in and out: atomic writes, video and image-sequence reading and writing, overlays.

atomic.py   files and folders that appear complete or not at all
video.py    frame sources (video files, image folders, globs) and the H.264 writer
overlay.py  class colours blended over frames, boundaries and a legend
palette.py  class colours
"""
