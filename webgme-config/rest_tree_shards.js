/*eslint-env node*/
// The REST tree API (GET .../tree/<path>) reads through nodes whose overlay is sharded.
//
// webgme-engine 2.31.0's storagehelpers.loadPath walks a path from the root hash, taking each child's hash as
// `object[relid]` of the object loadObject returned.  For a node whose overlay is sharded (more than
// gmeConfig.storage.overlayShardSize = 10,000 pointer entries: the root of a project that has run a few
// hundred jobs), loadObject returns a wrapper `{multipleObjects: true, objects: {<hash>: node, <shard>:
// ...}}`, so the child's hash is undefined, the load fails, storage.loadPaths swallows it ("loadPaths failed,
// ignoring") and the API answers 404 "Path does not exist" for every path below that node.  The model is
// intact (the core loads shards itself); only the REST reads go blind.  The soak run (seed 15, 250 jobs)
// found it: its drivers and its audit read the model over REST and lost sight of all 18 Executions.
// Here the walk takes the child's hash from the node itself inside the wrapper
// (tests/integration/test_webgme_rest_tree_shards.py).
'use strict';

const storageHelpers = require('webgme-engine/src/server/storage/storagehelpers');

/** The node itself, whether loadObject returned it plain or wrapped with its overlay shards. */
function ownObject(hash, result) {
    return result && result.multipleObjects === true ? result.objects[hash] : result;
}

function loadPath(dbProject, rootHash, loadedObjects, path, excludeParents) {
    const relids = path.split('/').slice(1);  // '' (the root), then one relid per level

    function keep(hash, result) {
        if (result && result.multipleObjects === true) {
            Object.keys(result.objects).forEach(key => {
                loadedObjects[key] = result.objects[key];
            });
        } else {
            loadedObjects[hash] = result;
        }
    }

    async function walk(hash, depth) {
        const relid = relids[depth];
        const cached = loadedObjects[hash];
        const result = cached || await storageHelpers.loadObject(dbProject, hash);
        if (relid === undefined || relid === '') {
            if (!cached) {
                keep(hash, result);
            }
            return;
        }
        if (!cached && !excludeParents) {
            keep(hash, result);
        }
        const node = ownObject(hash, result);
        return walk(node && node[relid], depth + 1);
    }

    return walk(rootHash, 0);
}

if (storageHelpers.loadPath !== loadPath) {
    storageHelpers.loadPath = loadPath;
}

module.exports = {loadPath};
