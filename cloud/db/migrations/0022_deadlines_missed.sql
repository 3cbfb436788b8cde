-- How many deadlines a case has missed (each escalation or press by the timers): an open
-- case that missed one is overdue, although each escalation gives it a new deadline (the
-- screen read "overdue 0" while every case had been escalated).
ALTER TABLE cases ADD COLUMN IF NOT EXISTS deadlines_missed integer NOT NULL DEFAULT 0;
UPDATE cases c SET deadlines_missed = h.n
FROM (SELECT case_id, count(*) AS n FROM case_history
      WHERE actor = 'system' AND action IN ('escalate', 'supervise')
      GROUP BY case_id) h
WHERE c.case_id = h.case_id AND c.deadlines_missed = 0;
