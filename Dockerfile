# SheetReel, CPU image: the gateway, CPU workers (storyboards, compose, Ken Burns shots, cloud
# providers) and the all-in-one `run`. The GPU workers' image is Dockerfile.gpu.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg fonts-noto-cjk fontconfig \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/sheetreel
COPY . /opt/sheetreel
RUN pip install --no-cache-dir "/opt/sheetreel[postgres]"
ENV SHEETREEL_DATA_DIR=/srv/sheetreel/data
ENTRYPOINT ["sheetreel"]
CMD ["run"]
