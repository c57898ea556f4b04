/*eslint-env node*/
/*eslint no-console: 0*/
/**
 * Prints the metamodel of a .webgmex seed as canonical JSON (stdout), for comparing two seeds' languages
 * (tests/integration/test_webgme_seed.py diffs ours against DeepForge's pipeline.webgmex).
 *
 * The file is read with webgme-engine's core over the seed's own objects (no database).  One entry per meta
 * node, keyed by its fully qualified name ("pipeline.Pipeline" for a node of the library "pipeline"):
 *   base, abstract, isPort, mixins, attributes {name: {rule..., default}}, pointers {name: {min, max,
 *   targets {name: [min, max]}}} (sets too), children {min, max, items {name: [min, max]}}, aspects,
 *   constraints, validPlugins (registry), library ('' for the project's own nodes).
 * Node references are fully qualified names, so the dump does not depend on node paths.
 *
 * Usage: node seeds/dump_meta.js SEED.webgmex
 */
'use strict';

const AdmZip = require('adm-zip');
const webgme = require('webgme-engine');
const gmeConfig = require('../config');

webgme.addToRequireJsPaths(gmeConfig);
const Core = webgme.requirejs('common/core/coreQ');

/** The minimal project a core reads through: the seed's objects by hash. */
function objectStore(objects) {
    const byHash = new Map(objects.map(o => [o._id, o]));
    const load = hash => {
        const obj = byHash.get(hash);
        if (!obj) {
            throw new Error(`object ${hash} is not in the seed`);
        }
        return obj;
    };
    return {
        ID_NAME: '_id',
        loadObject(hash, callback) {
            try {
                callback(null, JSON.parse(JSON.stringify(load(hash))));
            } catch (err) {
                callback(err);
            }
        },
        loadPaths(rootHash, paths, callback) {
            callback(null, {});
        }
    };
}

function fqn(core, node) {
    return node ? core.getFullyQualifiedName(node) : null;
}

function describe(core, node, names) {
    const meta = core.getJsonMeta(node);
    const attributes = {};
    core.getValidAttributeNames(node).sort().forEach(name => {
        attributes[name] = Object.assign({}, core.getAttributeMeta(node, name), {default: core.getAttribute(node, name)});
    });
    const pointers = {};
    Object.keys(meta.pointers || {}).sort().forEach(name => {
        const rule = meta.pointers[name];
        const items = rule.items.map((path, i) => [path, rule.minItems[i], rule.maxItems[i]]);
        pointers[name] = {
            min: rule.min === undefined ? null : rule.min,
            max: rule.max === undefined ? null : rule.max,
            targets: Object.fromEntries(items.map(([p, mn, mx]) => [names[p] || p, [mn, mx]]).sort())
        };
    });
    const children = meta.children || {};
    const childItems = (children.items || []).map((path, i) => [names[path] || path,
        [children.minItems[i], children.maxItems[i]]]).sort();
    const libraryName = core.getNamespace(node);
    return {
        base: fqn(core, core.getBase(node)),
        abstract: core.isAbstract(node),
        isPort: Boolean(core.getRegistry(node, 'isPort')),
        mixins: core.getMixinPaths(node).map(p => names[p] || p).sort(),
        attributes,
        pointers,
        children: {
            min: children.min === undefined ? null : children.min,
            max: children.max === undefined ? null : children.max,
            items: Object.fromEntries(childItems)
        },
        aspects: Object.fromEntries(Object.entries(meta.aspects || {}).sort()
            .map(([a, paths]) => [a, paths.map(p => names[p] || p).sort()])),
        constraints: core.getConstraintNames(node).sort(),
        validPlugins: (core.getRegistry(node, 'validPlugins') || '').split(/\s+/).filter(Boolean).sort(),
        library: libraryName
    };
}

async function dump(seedFile) {
    const json = JSON.parse(new AdmZip(seedFile).readAsText('project.json'));
    const logger = webgme.Logger.create('gme:seed:dump', gmeConfig.bin.log, false);
    const core = new Core(objectStore(json.objects), {globConf: gmeConfig, logger});
    const root = await core.loadRoot(json.rootHash);
    await core.loadSubTree(root);
    const metaNodes = core.getAllMetaNodes(root);
    const names = {};
    Object.entries(metaNodes).forEach(([path, node]) => {
        names[path] = fqn(core, node);
    });
    const out = {};
    Object.values(metaNodes).forEach(node => {
        out[fqn(core, node)] = describe(core, node, names);
    });
    const sorted = {};
    Object.keys(out).sort().forEach(k => {
        sorted[k] = out[k];
    });
    const rootMeta = core.getJsonMeta(root).children || {};
    const nodes = {};
    for (const library of [''].concat(core.getLibraryNames(root))) {
        const top = library ? core.getLibraryRoot(root, library) : root;
        const subtree = await core.loadSubTree(top);
        subtree.filter(n => n !== top && core.getNamespace(n) === library && !core.isLibraryRoot(n))
            .forEach(n => {
                const names = [];
                for (let m = n; m && m !== top; m = core.getParent(m)) {
                    names.unshift(core.getAttribute(m, 'name'));
                }
                nodes[(library ? library + ':' : '') + names.join('/')] = {
                    base: fqn(core, core.getBase(n)),
                    meta: core.isMetaNode(n),
                    attributes: Object.fromEntries(core.getOwnAttributeNames(n).sort()
                        .map(a => [a, core.getOwnAttribute(n, a)]))
                };
            });
    }
    return {
        libraries: core.getLibraryNames(root).sort(),
        libraryInfo: Object.fromEntries(core.getLibraryNames(root).map(l => [l, core.getLibraryInfo(root, l)])),
        rootChildrenMeta: Object.fromEntries((rootMeta.items || []).map((p, i) => [names[p] || p,
            [rootMeta.minItems[i], rootMeta.maxItems[i]]]).sort()),
        nodes,
        rootChildren: (await core.loadChildren(root)).filter(c => !core.isLibraryRoot(c))
            .map(c => ({name: core.getAttribute(c, 'name'), meta: fqn(core, core.getMetaType(c))}))
            .sort((a, b) => a.name < b.name ? -1 : 1),
        meta: sorted
    };
}

dump(process.argv[2]).then(result => {
    process.stdout.write(JSON.stringify(result, null, 1) + '\n');
}).catch(err => {
    console.error(err.stack || err);
    process.exit(1);
});
