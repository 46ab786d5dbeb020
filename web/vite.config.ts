// Builds the admin web UI into dist/web, which `dockhand server` serves at `/` (src/server/webUi.ts).
import react from '@vitejs/plugin-react';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root: here,
  base: '/',
  plugins: [react()],
  build: {
    outDir: fileURLToPath(new URL('../dist/web', import.meta.url)),
    emptyOutDir: true,
    sourcemap: true,
    // The page must run under the server's CSP (script-src 'self'): no inline scripts, no module preload polyfill.
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 1024,
  },
  server: {
    // `npx vite --config web/vite.config.ts` for development, against a local `dockhand server`.
    proxy: { '/api': 'http://127.0.0.1:7070', '/healthz': 'http://127.0.0.1:7070' },
  },
});
