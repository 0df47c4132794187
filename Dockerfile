# SheetReel, CPU image: the gateway, CPU workers (storyboards, compose, Ken Burns shots, cloud
# providers) and the all-in-one `run`. The GPU workers' image is Dockerfile.gpu.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg fonts-noto-cjk fontconfig \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/sheetreel
COPY . /opt/sheetreel
RUN pip install --no-cache-dir "/opt/sheetreel[postgres]"
# Not root, like the systemd units (User=sheetreel). The same uid as in Dockerfile.gpu, since both
# images write the shared `store` volume; not 1000, which ubuntu:24.04 (the GPU base) already uses.
# data/ and store/ exist and are the user's so that a named volume mounted there starts out
# writable; a bind-mounted host folder must be writable by uid 10001.
RUN useradd --uid 10001 --user-group --create-home --no-log-init sheetreel \
 && mkdir -p /srv/sheetreel/data /srv/sheetreel/store \
 && chown -R sheetreel:sheetreel /srv/sheetreel
USER sheetreel
ENV SHEETREEL_DATA_DIR=/srv/sheetreel/data
ENTRYPOINT ["sheetreel"]
CMD ["run"]
