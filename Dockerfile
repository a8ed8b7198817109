# Two images from one file (docker-compose.yml picks them by target):
#   app   the pipeline: workers, dashboard, CLIs; the native router with its CPU back-ends (SIMD)
#   route app plus the router rebuilt with its CUDA back-end, for the route worker on a GPU host
FROM node:20-bookworm AS app
RUN apt-get update && apt-get install -y --no-install-recommends \
      libcairo2-dev libpango1.0-dev libjpeg-dev libgif-dev librsvg2-dev fonts-dejavu-core cmake g++ make python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Node's own headers (the node images ship them): node-gyp and cmake-js build against them instead of downloading.
ENV npm_config_nodedir=/usr/local
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY . .
RUN npx cmake-js compile --out build
ENV MOE_SKIP_SETUP=1 NODE_ENV=production
CMD ["node", "--import", "tsx", "src/cli/workers.ts"]

# nvcc and the static CUDA runtime from NVIDIA's Debian 12 repository: the addon links cudart statically, so the
# route image needs no CUDA libraries at run time, only the driver the NVIDIA container runtime mounts.
FROM app AS cuda-build
ARG CUDA_PACKAGE_VERSION=13-0
RUN curl -fsSL -o /tmp/cuda-keyring.deb \
      https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
    && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
    && apt-get update && apt-get install -y --no-install-recommends \
      cuda-nvcc-${CUDA_PACKAGE_VERSION} cuda-cudart-dev-${CUDA_PACKAGE_VERSION} \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/local/cuda/bin:${PATH}
# A build that silently lost CUDA would reserve a GPU and route on the CPU: fail the image build instead.
RUN rm -rf build && { npx cmake-js compile --out build > /tmp/cmake.log 2>&1 || { cat /tmp/cmake.log; exit 1; }; } \
    && grep "CUDA backend enabled" /tmp/cmake.log

FROM app AS route
COPY --from=cuda-build /app/build/Release/moe_router.node /app/build/Release/moe_router.node
