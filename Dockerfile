FROM node:20-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends \
      libcairo2-dev libpango1.0-dev libjpeg-dev libgif-dev librsvg2-dev fonts-dejavu-core cmake g++ make python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Node's own headers (the node images ship them): node-gyp and cmake-js build against them instead of downloading.
ENV npm_config_nodedir=/usr/local
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npx cmake-js compile --out build
ENV MOE_SKIP_SETUP=1 NODE_ENV=production
CMD ["node", "--import", "tsx", "src/cli/workers.ts"]
