'use strict';
// Every export is a class that throws when constructed or called: loading works, using fails loudly.
function unavailable(name) {
  const fail = () => {
    throw new Error(`@matrix-org/matrix-sdk-crypto-nodejs.${name} is a test stand-in (no native crypto here)`);
  };
  return new Proxy(function () {}, {
    construct: fail,
    apply: fail,
    get: (_target, prop) => (prop === 'prototype' ? {} : unavailable(`${name}.${String(prop)}`)),
  });
}
module.exports = new Proxy(
  {},
  {
    get: (_target, prop) => (prop === '__esModule' ? false : unavailable(String(prop))),
  },
);
