// fake-indexeddb's `auto` entry (which installs IndexedDB on globalThis) ships no types of its own.
declare module 'fake-indexeddb/auto';
