// js-ipfs 0.66's dependencies call Promise.withResolvers, which Node.js has only from 22 on.
// Preloaded with NODE_OPTIONS=--require so the daemon and CLI run on Node 20.
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers () {
      let resolve, reject
      const promise = new this((res, rej) => { resolve = res; reject = rej })
      return { promise, resolve, reject }
    }
  })
}
