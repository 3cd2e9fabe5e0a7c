// The demo shop's tracking: the real analytics.js (@segment/analytics-next), bundled at
// build time (npm run build:shop) so the page loads nothing from any CDN.
import { AnalyticsBrowser } from '@segment/analytics-next'

window.AnalyticsBrowser = AnalyticsBrowser
