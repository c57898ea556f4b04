/*globals define*/
/*jshint browser: true*/
/**
 * Reads a DeepForge Pipeline or Execution from the WebGME client's loaded nodes into the graph that
 * PipelineDagWidget draws, and keeps a territory on it.
 *
 * The model (DeepForge's `pipeline` library, docs/protocols.md "Metamodel and dataInfo"):
 *   Pipeline  > Operation > Inputs|Outputs > Data (the ports);  Pipeline > Transporter (src, dst -> Data)
 *   Execution > Job > Operation > Inputs|Outputs > Data;         Execution > Transporter (between those ports)
 * so the territory reaches four levels below the shown node.  Meta types are matched by name among the
 * project's meta nodes, whether the library is attached under a namespace (our seed: pipeline.Operation) or
 * not (DeepForge's own project.webgmex).
 */
define([], function () {
    'use strict';

    var DEPTH = 4;

    function metaIds(client) {
        var ids = {};
        client.getAllMetaNodes().forEach(function (meta) {
            var name = meta.getAttribute('name');
            (ids[name] = ids[name] || []).push(meta.getId());
        });
        return ids;
    }

    function isA(node, metas, name) {
        return !!node && (metas[name] || []).some(function (id) {
            return node.isTypeOf(id);
        });
    }

    function childrenOf(client, node) {
        return node.getChildrenIds().map(function (id) {
            return client.getNode(id);
        }).filter(Boolean);
    }

    function byPosition(a, b) {
        var pa = a.getRegistry('position') || {x: 0}, pb = b.getRegistry('position') || {x: 0};
        return (pa.x || 0) - (pb.x || 0);
    }

    /** The argument names of `def execute(self, a, b=...)` in an operation's code (DeepForge's port order). */
    function executeArgs(code) {
        var match = /def\s+execute\s*\(([^)]*)\)/.exec(code || '');
        if (!match) {
            return [];
        }
        return match[1].split(',').map(function (arg) {
            return arg.split(/[=:]/)[0].replace(/^\s*\**/, '').trim();
        }).filter(function (name) {
            return name && name !== 'self';
        });
    }

    function ports(client, metas, operation, kind) {
        var box = childrenOf(client, operation).filter(function (c) {
            return isA(c, metas, kind);
        })[0];
        if (!box) {
            return [];
        }
        var order = kind === 'Inputs' ? executeArgs(operation.getAttribute('code')) : [];
        function rank(p) {
            var i = order.indexOf(p.getAttribute('name'));
            return i === -1 ? order.length : i;
        }
        return childrenOf(client, box).filter(function (p) {
            return isA(p, metas, 'Data');
        }).sort(function (a, b) {
            return rank(a) - rank(b) || byPosition(a, b) ||
                ((a.getAttribute('name') || '') < (b.getAttribute('name') || '') ? -1 : 1);
        }).map(function (p) {
            return {id: p.getId(), name: p.getAttribute('name') || ''};
        });
    }

    /**
     * The graph of the Pipeline or Execution `nodeId`: {kind, nodes, edges}; nodes are operations (a
     * Pipeline) or jobs (an Execution; node.operationId is the job's Operation copy, node.attributes the
     * job's attributes).
     */
    function read(client, nodeId) {
        var container = client.getNode(nodeId),
            metas = metaIds(client),
            graph = {kind: null, nodes: [], edges: []};

        if (!container) {
            return graph;
        }
        graph.kind = isA(container, metas, 'Execution') ? 'Execution' : 'Pipeline';
        childrenOf(client, container).forEach(function (child) {
            var operation = child,
                entry;
            if (isA(child, metas, 'Transporter') || (child.getPointerId('src') && child.getPointerId('dst'))) {
                if (child.getPointerId('src') && child.getPointerId('dst')) {
                    graph.edges.push({id: child.getId(), src: child.getPointerId('src'),
                        dst: child.getPointerId('dst')});
                }
                return;
            }
            if (isA(child, metas, 'Job')) {
                operation = childrenOf(client, child).filter(function (c) {
                    return isA(c, metas, 'Operation');
                })[0];
            } else if (!isA(child, metas, 'Operation')) {
                return;
            }
            entry = {
                id: child.getId(),
                name: child.getAttribute('name') || '',
                inputs: operation ? ports(client, metas, operation, 'Inputs') : [],
                outputs: operation ? ports(client, metas, operation, 'Outputs') : [],
                operationId: operation ? operation.getId() : null,
                attributes: {}
            };
            child.getAttributeNames().forEach(function (name) {
                entry.attributes[name] = child.getAttribute(name);
            });
            if (isA(child, metas, 'Job')) {
                entry.status = entry.attributes.status || 'pending';
            }
            graph.nodes.push(entry);
        });
        return graph;
    }

    /**
     * Watch `nodeId` and what is under it; onChange() after each batch of territory events (the first one
     * included).  Returns {stop(), also(ids)}: also() adds nodes (themselves only) to the territory.
     */
    function watch(client, ui, nodeId, onChange) {
        var patterns = {},
            territoryId = client.addUI(ui, function () {
                onChange();
            });
        patterns[nodeId] = {children: DEPTH};
        client.updateTerritory(territoryId, patterns);
        return {
            stop: function () {
                client.removeUI(territoryId);
            },
            also: function (ids) {
                var added = ids.filter(function (id) {
                    return !patterns.hasOwnProperty(id);
                });
                added.forEach(function (id) {
                    patterns[id] = {children: 0};
                });
                if (added.length) {
                    client.updateTerritory(territoryId, patterns);
                }
            }
        };
    }

    return {read: read, watch: watch, isA: isA, metaIds: metaIds};
});
