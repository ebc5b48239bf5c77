-- The kept context (20261204100000) is written on every step: jet_ops.table_health watches it
-- with the other hot tables.
CREATE OR REPLACE VIEW jet_ops.table_health AS
SELECT s.schemaname || '.' || s.relname AS table_name,
       s.n_live_tup                     AS live_tuples,
       s.n_dead_tup                     AS dead_tuples,
       s.last_autovacuum                AS last_autovacuum,
       s.last_autoanalyze               AS last_autoanalyze,
       s.autovacuum_count               AS autovacuum_count
FROM pg_stat_user_tables s
WHERE (s.schemaname = 'public' AND s.relname IN ('tblNodeExecutions', 'tblWorkflowInstances',
        'tblWorkflowInstanceLogs', 'tblWorkflowInstanceContext', 'tblListenerInbox',
        'tblListenerActionRuns', 'tblEventDLQ', 'tblCronJobHistory', 'tblCronJobs',
        'tblListenerHolds'))
   OR (s.schemaname = 'apalis' AND s.relname = 'jobs');
